"""peftlab: fine-tune a pretrained image classifier with several methods and compare them."""

__version__ = "0.1.0"
