"""Training: one path for stage 1 (images or cached features) and fine-tuning; lr-find."""
