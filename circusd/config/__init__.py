"""Reading, modelling and validating configuration files."""
