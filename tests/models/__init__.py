"""Models the tests build locally (tiny random weights, real architectures), one module per kind;
nothing is downloaded."""
