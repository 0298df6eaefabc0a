package cache

// Stats counts the tenants, keys and value bytes this replica holds, for
// metrics. It visits every tenant under its read lock, so it belongs at
// scrape time (every few seconds), not on the path of a call.
func (s *Store) Stats() (tenants, keys, bytes int64) {
	s.tenants.Range(func(_, v any) bool {
		t := v.(*tenantData)
		t.mu.RLock()
		if t.n > 0 {
			tenants++
		}
		keys += int64(t.n)
		for _, b := range t.blocks {
			for _, e := range b.entries {
				bytes += int64(e.vlen)
			}
		}
		t.mu.RUnlock()
		return true
	})
	return tenants, keys, bytes
}
