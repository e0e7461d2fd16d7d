/**
 * Sets `key` in `map` as its most recent entry (a Map iterates in insertion order, so deleting
 * first moves it last) and forgets the least recent entries beyond `max`: a bounded LRU for the
 * few places that remember per peer or per name (admin auth failures, `sniCallback` answers).
 */
export function setRecent<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done === true) return;
    map.delete(oldest.value);
  }
}
