hlt
