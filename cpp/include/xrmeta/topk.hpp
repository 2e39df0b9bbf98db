// The k best (score, id) pairs of a stream, as the numba kernels keep them (`kernels/search.py` `_heap_push`,
// `_heap_drain`): a min-heap whose root is the worst kept pair. The order is total -- a higher score is better,
// and on equal scores the smaller id -- so the kept set and the drained order do not depend on arrival order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace xrmeta {

template <class Id>
class TopK {
public:
    explicit TopK(int64_t k) : k_(k < 0 ? 0 : k), score_(k_), id_(k_) {}

    int64_t size() const { return size_; }
    int64_t capacity() const { return k_; }
    bool full() const { return size_ >= k_; }
    float worst_score() const { return score_[0]; }  // the root: only when size() > 0
    // Keeps the k best from now on, at most the constructed k: one heap's storage serves a beam search's layers
    // (`beam` nodes each, `last_beam` in the last). Only on an empty heap.
    void set_capacity(int64_t k) { k_ = std::clamp<int64_t>(k, 0, static_cast<int64_t>(score_.size())); }
    Id id_at(int64_t a) const { return id_[a]; }  // the kept ids, in heap (not ranked) order
    void clear() { size_ = 0; }

    void push(float score, Id id) {
        if (size_ < k_) {
            int64_t i = size_++;
            while (i > 0) {  // sift up
                int64_t parent = (i - 1) / 2;
                if (!worse(score, id, score_[parent], id_[parent])) break;
                score_[i] = score_[parent];
                id_[i] = id_[parent];
                i = parent;
            }
            score_[i] = score;
            id_[i] = id;
        } else if (k_ > 0 && worse(score_[0], id_[0], score, id)) {
            sift_down_from_root(size_, score, id);
        }
    }

    // Writes the kept pairs best first into out_score/out_id (length out_k >= size), pads with (0, -1), and
    // empties the heap for the next query.
    void drain(float* out_score, Id* out_id, int64_t out_k) {
        for (int64_t a = size_; a < out_k; ++a) {
            out_score[a] = 0.0f;
            out_id[a] = Id(-1);
        }
        for (int64_t n = size_ - 1; n >= 0; --n) {  // the root is the worst: it goes last
            out_score[n] = score_[0];
            out_id[n] = id_[0];
            sift_down_from_root(n, score_[n], id_[n]);
        }
        size_ = 0;
    }

private:
    static bool worse(float s, Id i, float t, Id j) { return s < t || (s == t && i > j); }

    // Put (score, id) at the root of the heap's first n pairs and move it down to its place.
    void sift_down_from_root(int64_t n, float score, Id id) {
        int64_t i = 0;
        while (true) {
            int64_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && worse(score_[child + 1], id_[child + 1], score_[child], id_[child])) ++child;
            if (!worse(score_[child], id_[child], score, id)) break;
            score_[i] = score_[child];
            id_[i] = id_[child];
            i = child;
        }
        if (n > 0) {
            score_[i] = score;
            id_[i] = id;
        }
    }

    int64_t k_;
    std::vector<float> score_;
    std::vector<Id> id_;
    int64_t size_ = 0;
};

}  // namespace xrmeta
