// A model directory saved by `XRMetaModel.save`, read without Python: the upper layers, the leaf layer (trained
// and inserted items) and the search settings, from catalog.npz, catalog_ids.txt and layouts.npz. It answers
// TF-IDF query vectors (the text featurizer is Python's: `model.featurizer.transform`); items inserted into the
// directory's log since its last save are not replayed (save first).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "xrmeta/layout.hpp"
#include "xrmeta/npz.hpp"

namespace xrmeta {

struct SearchResult {
    std::vector<int64_t> slots;  // (n, k) row-major, -1 padded
    std::vector<float> scores;   // (n, k), 0 padded
};

class SavedModel {
   public:
    // Throws NpzError naming the file on anything missing or malformed.
    static SavedModel load(const std::string& model_dir);
    SavedModel(SavedModel&&) = default;  // the layouts view the arrays' buffers, which a move keeps in place
    SavedModel(const SavedModel&) = delete;

    // Top-k slots and scores of each query row, beam search and leaf scoring as `XRMetaModel.predict_features`
    // with the model's beam, on n_threads threads.
    SearchResult search(const Rows& queries, int64_t k, int64_t n_threads = 1) const;

    const std::string& id(int64_t slot) const { return ids_[slot]; }
    int64_t n_features() const { return n_features_; }

    UpperLayout upper;
    LeafLayout leaf;
    InsertedLayout inserted;
    int64_t beam_size = 10, inserted_beam = 20, split_probe = 2, memberships = 1, max_group_size = 1;

   private:
    SavedModel() = default;
    std::map<std::string, NpyArray> catalog_, layouts_;
    std::vector<std::string> ids_;
    int64_t n_features_ = 0;
};

}  // namespace xrmeta
