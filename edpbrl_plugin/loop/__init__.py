"""The personalization loop: session state kept in the store, the loop itself (sample -> ask -> record ->
update), training data from answers, LoRA versions, the diffusers mixin and the status report."""
