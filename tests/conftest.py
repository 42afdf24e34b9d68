"""Test configuration: make tests/ importable (for the dense oracle) under importlib mode."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
