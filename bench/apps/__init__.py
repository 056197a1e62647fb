"""Reference apps the benchmarks compare segstream against."""
