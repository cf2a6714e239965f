"""``python -m edpbrl_plugin`` is the ``edpbrl`` command."""

from .cli import main

main()
