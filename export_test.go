package n8nrunner

// Counts returns the open offers of the current connection and the tasks
// in the table, for tests that check the capacity invariant.
func (r *Runner) Counts() (offers, tasks int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sess != nil {
		offers = r.sess.offers.len()
	}
	return offers, len(r.tasks)
}
