import os
import sys

# The test table lives beside the tests; make it importable as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
