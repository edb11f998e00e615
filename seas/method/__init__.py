"""SeaS: prompts, attention capture, losses, latents, training data, generator and RMP training, generation,
checkpoints. Floor 3: imports seas.run, seas.data, seas.models."""
