"""Process-wide state for hosts such as ComfyUI: the registry of stores, sessions, pipelines and versioned
pipeline handles, and the broker that hands a waiting graph its answer."""
