"""Everything that touches Feast: repo access, online writes, registry bookkeeping."""
