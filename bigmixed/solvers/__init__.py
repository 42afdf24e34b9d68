"""The factor step: systems solving Lambda'Z'Z Lambda + I (the interface: `base`)."""
