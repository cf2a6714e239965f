"""Online personalization of a diffusion model: PEFT LoRA updates from answers, drift guard, export."""
