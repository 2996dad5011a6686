"""Task metrics written as a user would write them (int8kit's module:Class metric plugins)."""
