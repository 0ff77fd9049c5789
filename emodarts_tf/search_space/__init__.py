"""The emoDARTS search space: candidate ops, mixed ops, searchable CNN and SeqNN cells, genotypes."""
