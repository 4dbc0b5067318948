"""Who may publish and subscribe where (relay spec §5-§6)."""
