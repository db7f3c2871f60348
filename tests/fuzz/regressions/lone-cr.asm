|y
