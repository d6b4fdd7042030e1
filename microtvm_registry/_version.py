"""The package's version, in a module of its own so any stage can read it without importing the
package root (whose functions reach into higher stages)."""
__version__ = "0.1.0"
