"""Choosing what to ask: Fisher information of the choice model, question strategies (acquisition
functions over one model interface), and ED-PBRL's Frank-Wolfe prompt design."""
