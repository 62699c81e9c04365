"""The shipped plans, package data read through importlib.resources."""
