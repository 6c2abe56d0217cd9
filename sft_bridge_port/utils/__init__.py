"""Small shared helpers at the lowest floor: checkpoint folder layout, distributed contexts."""
