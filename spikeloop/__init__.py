"""spikeloop: an FPGA accelerator that learns on chip (SuperSpike)."""
__version__ = "0.1.0"
