"""The model floor: backbones, optimizer, device settings, inference engine, features, metrics."""
