"""scraper: a self-hosted news scraper with keyword alerting."""

__version__ = "0.1.0"
