"""The page side: slices to membership, membership to documents, documents to files."""
