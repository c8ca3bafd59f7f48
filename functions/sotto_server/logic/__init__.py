"""Domain rules, free of AWS: handlers feed them parsed input and stores."""
