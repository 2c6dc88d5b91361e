// GEDS from C++17 through geds.h: RAII handles, a round trip, a listing and a zero-copy view.
//   ./hello_cpp [BUCKET]        (MDS: $GEDS_MDS)
#include <geds.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// Throws the library's message for a failed call.
int64_t ok(int64_t rc, const char *what) {
    if (rc < 0) throw std::runtime_error(std::string(what) + ": " + geds_last_error());
    return rc;
}

struct Close { void operator()(geds_t *g) const { geds_close(g); } };
struct CloseReader { void operator()(geds_reader_t *r) const { geds_reader_close(r); } };
struct CloseIter { void operator()(geds_iter_t *it) const { geds_iter_close(it); } };
struct Release { void operator()(geds_view_t *v) const { geds_view_release(v); } };

}  // namespace

int main(int argc, char **argv) try {
    const std::string bucket = argc > 1 ? argv[1] : "cpp-example";
    geds_t *raw = nullptr;
    ok(geds_connect(nullptr, &raw), "geds_connect");
    std::unique_ptr<geds_t, Close> g(raw);
    ok(geds_create_bucket(g.get(), bucket.c_str()), "geds_create_bucket");

    std::vector<std::string> keys{"greetings/en", "greetings/fr", "other"};
    std::vector<std::string> texts{"hello, world", "bonjour, le monde", "..."};
    for (size_t i = 0; i < keys.size(); i++) {
        geds_writer_t *w = nullptr;
        ok(geds_create(g.get(), bucket.c_str(), keys[i].c_str(), &w), "geds_create");
        ok(geds_write(w, texts[i].data(), texts[i].size(), 0), "geds_write");
        const char *names[] = {"language"}, *values[] = {keys[i].c_str()};
        ok(geds_seal_metadata(w, names, values, 1), "geds_seal_metadata");
    }

    geds_iter_t *iter = nullptr;
    ok(geds_list(g.get(), bucket.c_str(), "greetings/", nullptr, &iter), "geds_list");
    std::unique_ptr<geds_iter_t, CloseIter> listing(iter);
    geds_entry_t entry;
    size_t listed = 0;
    while (ok(geds_next(listing.get(), &entry), "geds_next") == 1) {
        geds_reader_t *r = nullptr;
        ok(geds_open(g.get(), bucket.c_str(), entry.name, &r), "geds_open");
        std::unique_ptr<geds_reader_t, CloseReader> reader(r);
        geds_view_t *v = nullptr;
        const void *data = nullptr;
        uint64_t size = 0;
        ok(geds_view(reader.get(), &v, &data, &size), "geds_view");
        std::unique_ptr<geds_view_t, Release> view(v);
        std::string text(static_cast<const char *>(data), size);
        if (text != texts[listed]) throw std::runtime_error("wrong bytes in " + std::string(entry.name));
        std::printf("%s (%llu bytes): %s\n", entry.name, static_cast<unsigned long long>(size), text.c_str());
        listed++;
    }
    if (listed != 2) throw std::runtime_error("expected 2 objects under greetings/, listed " + std::to_string(listed));
    uint64_t deleted = 0;
    ok(geds_delete_prefix(g.get(), bucket.c_str(), "", &deleted), "geds_delete_prefix");
    std::printf("hello_cpp: OK (%s)\n", geds_version());
    return 0;
} catch (const std::exception &error) {
    std::fprintf(stderr, "hello_cpp: %s\n", error.what());
    return 1;
}
