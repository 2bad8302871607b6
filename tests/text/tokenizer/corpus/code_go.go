// Package lru implements a small LRU cache (corpus sample).
package lru

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
)

var ErrCapacity = errors.New("lru: capacity must be > 0")

type entry[K comparable, V any] struct {
	key   K
	value V
}

type Cache[K comparable, V any] struct {
	mu    sync.Mutex
	cap   int
	ll    *list.List
	items map[K]*list.Element
	hits, misses uint64
}

func New[K comparable, V any](capacity int) (*Cache[K, V], error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("%w (got %d)", ErrCapacity, capacity)
	}
	return &Cache[K, V]{cap: capacity, ll: list.New(), items: make(map[K]*list.Element, capacity)}, nil
}

func (c *Cache[K, V]) Get(key K) (v V, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.items[key]; found {
		c.ll.MoveToFront(el)
		c.hits++
		return el.Value.(*entry[K, V]).value, true
	}
	c.misses++
	return v, false
}

func (c *Cache[K, V]) Put(key K, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, found := c.items[key]; found {
		el.Value.(*entry[K, V]).value = value
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&entry[K, V]{key, value})
	if c.ll.Len() > c.cap {
		oldest := c.ll.Back()
		c.ll.Remove(oldest)
		delete(c.items, oldest.Value.(*entry[K, V]).key)
	}
}

func (c *Cache[K, V]) String() string {
	return fmt.Sprintf("lru{len=%d cap=%d hit=%.1f%%}", c.ll.Len(), c.cap,
		100*float64(c.hits)/float64(max(1, c.hits+c.misses)))
}

func example() {
	c, err := New[string, int](2)
	if err != nil {
		panic(err)
	}
	c.Put("a", 1)
	c.Put("b", 2)
	_, _ = c.Get("a")
	c.Put("c", 3) // evicts "b"
	select {
	case <-make(chan struct{}):
	default:
	}
	go func() { fmt.Println(c) }()
	var x uint8 = 0b1111_0000
	x &^= 0x0f
	ch := make(chan<- int, 3)
	_ = ch
}
