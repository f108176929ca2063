"""After a run: explanations (class-activation maps), their localisation scores and cross-validation."""
