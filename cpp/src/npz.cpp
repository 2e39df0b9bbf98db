#include "xrmeta/npz.hpp"

#include <cstring>
#include <fstream>
#include <sstream>

namespace xrmeta {
namespace {

template <class T>
const char* dtype_of();
template <> const char* dtype_of<int32_t>() { return "<i4"; }
template <> const char* dtype_of<int64_t>() { return "<i8"; }
template <> const char* dtype_of<float>() { return "<f4"; }
template <> const char* dtype_of<double>() { return "<f8"; }
template <> const char* dtype_of<bool>() { return "|b1"; }

uint64_t le(const std::vector<char>& b, uint64_t at, int n, const std::string& path) {
    if (at + n > b.size()) throw NpzError(path + ": truncated zip structure");
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
    return v;
}

// The value of key in a .npy header dict, e.g. "'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }".
std::string header_value(const std::string& h, const std::string& key, const std::string& where) {
    auto at = h.find("'" + key + "'");
    if (at == std::string::npos) throw NpzError(where + ": .npy header without " + key);
    at = h.find(':', at) + 1;
    while (at < h.size() && h[at] == ' ') ++at;
    auto end = h[at] == '(' ? h.find(')', at) + 1 : h.find_first_of(",}", h[at] == '\'' ? h.find('\'', at + 1) : at);
    return h.substr(at, end - at);
}

NpyArray parse_npy(const char* p, uint64_t n, const std::string& where) {
    if (n < 10 || std::memcmp(p, "\x93NUMPY", 6) != 0) throw NpzError(where + ": not a .npy array");
    int major = static_cast<unsigned char>(p[6]);
    uint64_t hlen = major == 1 ? (static_cast<unsigned char>(p[8]) | static_cast<unsigned char>(p[9]) << 8)
                               : (uint64_t(static_cast<unsigned char>(p[8])) | uint64_t(static_cast<unsigned char>(p[9])) << 8 |
                                  uint64_t(static_cast<unsigned char>(p[10])) << 16 | uint64_t(static_cast<unsigned char>(p[11])) << 24);
    uint64_t start = (major == 1 ? 10 : 12) + hlen;
    if (start > n) throw NpzError(where + ": truncated .npy header");
    std::string h(p + (major == 1 ? 10 : 12), hlen);
    NpyArray a;
    a.dtype = header_value(h, "descr", where);
    a.dtype = a.dtype.substr(1, a.dtype.size() - 2);  // strip the quotes
    if (header_value(h, "fortran_order", where) != "False") throw NpzError(where + ": Fortran order not supported");
    std::string shape = header_value(h, "shape", where);
    std::stringstream s(shape.substr(1, shape.size() - 2));
    for (std::string dim; std::getline(s, dim, ',');)
        if (dim.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(dim));
    int item = a.dtype.size() >= 3 ? std::stoi(a.dtype.substr(2)) : 0;
    uint64_t bytes = uint64_t(a.size()) * item;
    if (item <= 0 || start + bytes > n) throw NpzError(where + ": truncated .npy data (" + a.dtype + ")");
    a.bytes.assign(p + start, p + start + bytes);
    return a;
}

}  // namespace

int64_t NpyArray::size() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

template <class T>
Span<T> NpyArray::span(const std::string& name) const {
    if (dtype != dtype_of<T>())
        throw NpzError(name + ": dtype " + dtype + ", expected " + dtype_of<T>());
    return {reinterpret_cast<const T*>(bytes.data()), size()};
}
template Span<int32_t> NpyArray::span(const std::string&) const;
template Span<int64_t> NpyArray::span(const std::string&) const;
template Span<float> NpyArray::span(const std::string&) const;
template Span<double> NpyArray::span(const std::string&) const;
template Span<bool> NpyArray::span(const std::string&) const;

double NpyArray::scalar(const std::string& name) const {
    if (size() != 1) throw NpzError(name + ": expected one value");
    if (dtype == "<i8") return double(span<int64_t>(name)[0]);
    if (dtype == "<i4") return double(span<int32_t>(name)[0]);
    if (dtype == "<f8") return span<double>(name)[0];
    if (dtype == "<f4") return span<float>(name)[0];
    throw NpzError(name + ": dtype " + dtype + " is not a number");
}

std::map<std::string, NpyArray> read_npz(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw NpzError(path + ": cannot open");
    std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // the end of central directory record: the last "PK\5\6" (a trailing comment may follow it)
    if (b.size() < 22) throw NpzError(path + ": not a zip file");
    int64_t eocd = -1;
    for (int64_t at = int64_t(b.size()) - 22; at >= 0 && at >= int64_t(b.size()) - 22 - 65535; --at)
        if (le(b, at, 4, path) == 0x06054b50) { eocd = at; break; }
    if (eocd < 0) throw NpzError(path + ": not a zip file");
    uint64_t entries = le(b, eocd + 10, 2, path), cd = le(b, eocd + 16, 4, path);
    if (cd == 0xFFFFFFFF || entries == 0xFFFF) {  // zip64: the locator just before points to the zip64 record
        uint64_t rec = le(b, eocd - 20 + 8, 8, path);
        if (le(b, rec, 4, path) != 0x06064b50) throw NpzError(path + ": bad zip64 record");
        entries = le(b, rec + 32, 8, path);
        cd = le(b, rec + 48, 8, path);
    }
    std::map<std::string, NpyArray> out;
    for (uint64_t e = 0; e < entries; ++e) {
        if (le(b, cd, 4, path) != 0x02014b50) throw NpzError(path + ": bad central directory");
        uint64_t method = le(b, cd + 10, 2, path), size = le(b, cd + 24, 4, path);
        uint64_t name_len = le(b, cd + 28, 2, path), extra_len = le(b, cd + 30, 2, path);
        uint64_t comment_len = le(b, cd + 32, 2, path), local = le(b, cd + 42, 4, path);
        std::string name(b.data() + cd + 46, name_len);
        // zip64 extra field (id 1): the 64-bit values of the fields set to 0xFFFFFFFF, in this order
        for (uint64_t x = cd + 46 + name_len; x + 4 <= cd + 46 + name_len + extra_len;) {
            uint64_t id = le(b, x, 2, path), len = le(b, x + 2, 2, path), v = x + 4;
            if (id == 1) {
                if (size == 0xFFFFFFFF) { size = le(b, v, 8, path); v += 8; }
                if (le(b, cd + 20, 4, path) == 0xFFFFFFFF) v += 8;  // compressed size
                if (local == 0xFFFFFFFF) local = le(b, v, 8, path);
            }
            x += 4 + len;
        }
        if (method != 0) throw NpzError(path + ": " + name + " is compressed (np.savez writes stored entries)");
        if (le(b, local, 4, path) != 0x04034b50) throw NpzError(path + ": bad local header of " + name);
        uint64_t data = local + 30 + le(b, local + 26, 2, path) + le(b, local + 28, 2, path);
        if (data + size > b.size()) throw NpzError(path + ": " + name + " is truncated");
        if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
        out.emplace(name, parse_npy(b.data() + data, size, path + ":" + name));
        cd += 46 + name_len + extra_len + comment_len;
    }
    return out;
}

}  // namespace xrmeta
