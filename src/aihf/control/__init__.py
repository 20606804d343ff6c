"""aihf.control"""
