/* ----------------------------------------------------------------------
   Integrity of a model file before torch::jit::load reads it.

   A TorchScript file is a zip archive whose members are stored uncompressed, each with a
   CRC-32 in the central directory. torch::jit::load checks none of them: a flipped bit in the
   weights loads silently, and a damaged header can fail deep inside the deserialiser. So the
   pair style reads the file once, walks the central directory and recomputes every stored
   member's CRC-32. zip_problem() returns "" for an intact archive, otherwise what is wrong.
------------------------------------------------------------------------- */

#ifndef GEOFF_ZIP_CHECK_H
#define GEOFF_ZIP_CHECK_H

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace geoff_zip {

inline uint32_t crc32(const unsigned char *data, size_t n)
{
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t k = 0; k < 256; ++k) {
      uint32_t c = k;
      for (int b = 0; b < 8; ++b) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[k] = c;
    }
    ready = true;
  }
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

inline uint64_t le(const std::vector<unsigned char> &b, size_t at, int bytes)
{
  uint64_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | b[at + k];
  return v;
}

// "" if `path` is an intact zip archive (every stored member matches its CRC-32).
inline std::string zip_problem(const std::string &path)
{
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot be read";
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (b.size() < 22) return b.empty() ? "is empty (0 bytes)" : "is too short to be a zip archive";
  if (!(b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4))
    return "is not a zip archive (TorchScript files are)";
  // End of central directory: the last "PK\5\6" record.
  size_t eocd = std::string::npos;
  for (size_t k = b.size() - 22 + 1; k-- > 0 && b.size() - k <= 65557;)
    if (b[k] == 'P' && b[k + 1] == 'K' && b[k + 2] == 5 && b[k + 3] == 6) {
      eocd = k;
      break;
    }
  if (eocd == std::string::npos) return "is a damaged zip archive (truncated: no directory)";
  uint64_t count = le(b, eocd + 10, 2), offset = le(b, eocd + 16, 4);
  if (count == 0xFFFF || offset == 0xFFFFFFFFu) {    // zip64: the locator precedes the EOCD
    if (eocd < 20 || le(b, eocd - 20, 4) != 0x07064b50u) return "is a damaged zip64 archive";
    const uint64_t z64 = le(b, eocd - 12, 8);
    if (z64 + 56 > b.size() || le(b, z64, 4) != 0x06064b50u) return "is a damaged zip64 archive";
    count = le(b, z64 + 32, 8);
    offset = le(b, z64 + 48, 8);
  }
  size_t p = offset;
  for (uint64_t m = 0; m < count; ++m) {
    if (p + 46 > b.size() || le(b, p, 4) != 0x02014b50u)
      return "is a damaged zip archive (bad central directory)";
    const uint64_t method = le(b, p + 10, 2), crc = le(b, p + 16, 4);
    uint64_t csize = le(b, p + 20, 4), local = le(b, p + 42, 4);
    const size_t nlen = le(b, p + 28, 2), xlen = le(b, p + 30, 2), clen = le(b, p + 32, 2);
    std::string name(b.begin() + p + 46, b.begin() + std::min(b.size(), p + 46 + nlen));
    for (char &ch : name)    // a damaged name must not make the error message invalid UTF-8
      if ((unsigned char) ch < 0x20 || (unsigned char) ch > 0x7E) ch = '?';
    // zip64 extra field: sizes/offset that did not fit in 32 bits, in this order.
    for (size_t x = p + 46 + nlen; x + 4 <= p + 46 + nlen + xlen && x + 4 <= b.size();) {
      const size_t id = le(b, x, 2), len = le(b, x + 2, 2);
      if (id == 1) {
        size_t at = x + 4;
        if (le(b, p + 24, 4) == 0xFFFFFFFFu) at += 8;    // uncompressed size
        if (csize == 0xFFFFFFFFu && at + 8 <= b.size()) csize = le(b, at, 8), at += 8;
        if (local == 0xFFFFFFFFu && at + 8 <= b.size()) local = le(b, at, 8);
      }
      x += 4 + len;
    }
    if (local + 30 > b.size() || le(b, local, 4) != 0x04034b50u)
      return "is a damaged zip archive (member '" + name + "' has no local header)";
    const size_t data = local + 30 + le(b, local + 26, 2) + le(b, local + 28, 2);
    if (data + csize > b.size())
      return "is a truncated zip archive (member '" + name + "' runs past the end)";
    if (method == 0 && crc32(b.data() + data, csize) != crc)
      return "is corrupted: member '" + name + "' fails its CRC-32 checksum";
    p += 46 + nlen + xlen + clen;
  }
  return "";
}

}    // namespace geoff_zip

#endif
