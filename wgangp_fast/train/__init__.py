"""The WGAN-GP trainer and what it trains on."""
