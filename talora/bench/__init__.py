"""``talora bench``: training-step speed against PEFT (speed) and serving throughput (serve)."""
