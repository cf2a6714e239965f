"""Tuning the denoiser from answers: PEFT LoRA adapters, the one seeded sampler, the update objectives (DPO,
PAPA / EPAPA, reward distillation), drift from the base model, and LoRA file formats."""
