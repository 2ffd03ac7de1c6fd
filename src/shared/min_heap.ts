/** A binary min-heap ordered by a numeric key. */
export class MinHeap<T> {
  #keys: number[] = [];
  #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(key: number, item: T): void {
    const keys = this.#keys, items = this.#items;
    let i = items.length;
    keys.push(key);
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      keys[i] = keys[parent]!;
      items[i] = items[parent]!;
      i = parent;
    }
    keys[i] = key;
    items[i] = item;
  }

  peekKey(): number | undefined {
    return this.#keys[0];
  }

  peek(): T | undefined {
    return this.#items[0];
  }

  /**
   * Keeps only the entries `keep` accepts, in O(n): for dropping entries
   * that went stale (lazy deletion) once they outnumber the live ones.
   */
  retain(keep: (key: number, item: T) => boolean): void {
    const keys = this.#keys, items = this.#items;
    let n = 0;
    for (let i = 0; i < items.length; i++) {
      if (!keep(keys[i]!, items[i]!)) continue;
      keys[n] = keys[i]!;
      items[n] = items[i]!;
      n++;
    }
    keys.length = n;
    items.length = n;
    // Floyd's heapify: sift every parent down, the last one first.
    for (let i = (n >> 1) - 1; i >= 0; i--) this.#siftDown(i);
  }

  #siftDown(start: number): void {
    const keys = this.#keys, items = this.#items;
    const n = items.length;
    const key = keys[start]!, item = items[start]!;
    let i = start;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && keys[child + 1]! < keys[child]!) child++;
      if (keys[child]! >= key) break;
      keys[i] = keys[child]!;
      items[i] = items[child]!;
      i = child;
    }
    keys[i] = key;
    items[i] = item;
  }

  pop(): T | undefined {
    const keys = this.#keys, items = this.#items;
    if (items.length === 0) return undefined;
    const top = items[0];
    const lastKey = keys.pop()!;
    const lastItem = items.pop()!;
    const n = items.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && keys[child + 1]! < keys[child]!) child++;
        if (keys[child]! >= lastKey) break;
        keys[i] = keys[child]!;
        items[i] = items[child]!;
        i = child;
      }
      keys[i] = lastKey;
      items[i] = lastItem;
    }
    return top;
  }
}
