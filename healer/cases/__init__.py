"""Policy test cases: ``healer test`` runs them through the production engine."""
