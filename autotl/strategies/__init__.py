"""autotl's built-in strategies, one family per module, each an ``autotl`` entry point."""
