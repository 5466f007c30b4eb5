"""reprorun's version, in a leaf module: reading it never imports the package's other parts."""

__version__ = "0.1.0"
