"""aihf.choice"""
