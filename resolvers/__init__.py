"""Resolvers by area: parse GraphQL input, call one domain service, map to schema types."""
