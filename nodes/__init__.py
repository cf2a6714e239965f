"""ComfyUI node classes: thin adapters over the engine in ``edpbrl_plugin``."""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
