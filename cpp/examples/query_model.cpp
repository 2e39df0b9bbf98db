// Answer queries from a saved xrmeta model directory, without Python.
//
//   query_model MODEL_DIR [K] < queries.txt
//
// Each input line is one query's TF-IDF vector as "feature:value" pairs separated by spaces (the model's own
// featurizer gives them: `model.featurizer.transform(texts)`; `python -m xrmeta.featurize` is not needed). Each
// output line is that query's top K (default 10) items, best first: "id<TAB>score" pairs separated by tabs.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "xrmeta/saved_model.hpp"

int main(int argc, char** argv) {
    if (argc < 2 || argc > 3) {
        std::cerr << "usage: " << argv[0] << " MODEL_DIR [K] < queries (one 'feature:value ...' line per query)\n";
        return 2;
    }
    const int64_t k = argc == 3 ? std::atoll(argv[2]) : 10;
    try {
        auto model = xrmeta::SavedModel::load(argv[1]);
        std::vector<int64_t> ptr{0};
        std::vector<int32_t> idx;
        std::vector<float> val;
        std::string line;
        for (int64_t row = 1; std::getline(std::cin, line); ++row) {
            std::istringstream in(line);
            for (std::string pair; in >> pair;) {
                auto colon = pair.find(':');
                long long f = colon == std::string::npos ? -1 : std::atoll(pair.substr(0, colon).c_str());
                if (f < 0 || f >= model.n_features()) {
                    std::cerr << "line " << row << ": bad feature '" << pair << "' (expected feature:value, feature < "
                              << model.n_features() << ")\n";
                    return 1;
                }
                idx.push_back(int32_t(f));
                val.push_back(std::strtof(pair.c_str() + colon + 1, nullptr));
            }
            ptr.push_back(int64_t(idx.size()));
        }
        xrmeta::Rows queries{{ptr.data(), int64_t(ptr.size())}, {idx.data(), int64_t(idx.size())},
                             {val.data(), int64_t(val.size())}};
        auto result = model.search(queries, k);
        for (int64_t i = 0; i + 1 < int64_t(ptr.size()); ++i) {
            for (int64_t j = 0; j < k; ++j) {
                int64_t s = result.slots[i * k + j];
                if (s < 0) break;
                std::printf("%s%s\t%.9g", j ? "\t" : "", model.id(s).c_str(), result.scores[i * k + j]);
            }
            std::printf("\n");
        }
    } catch (const std::exception& e) {
        std::cerr << "query_model: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
