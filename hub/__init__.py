"""OneWindow hub: routes claims to partner law firms and brings their updates back."""

__version__ = "0.1.0"
