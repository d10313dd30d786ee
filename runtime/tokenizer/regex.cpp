#include "runtime/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

// Unicode's White_Space property as a class body (what Oniguruma's \s matches).
constexpr const char* kWhiteSpaceClass =
    "\\t-\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string Regex::translate(std::string_view p) {
  std::string out;
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceClass) : std::string("[") + kWhiteSpaceClass + "]";
      } else if (e == 'S' && !in_class) {
        out += std::string("[^") + kWhiteSpaceClass + "]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      const std::size_t close = p.find(":]", i + 2);  // POSIX class [:alpha:]
      if (close != std::string_view::npos) {
        out.append(p.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

namespace {

std::shared_ptr<void> compile(std::string_view pattern, std::uint32_t options,
                              const std::string& where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, nullptr);
  if (code == nullptr) {
    throw std::runtime_error(where + ": cannot compile regex '" + std::string(pattern) +
                             "' at offset " + std::to_string(offset) + ": " + pcre2_message(error));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // a speed-up only; the interpreter is the fallback
  return std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
}

}  // namespace

Regex Regex::pattern(std::string_view p, const std::string& where) {
  Regex r;
  r.code_ = compile(translate(p), PCRE2_UTF | PCRE2_UCP, where);
  return r;
}

Regex Regex::literal(std::string_view text, const std::string& where) {
  Regex r;
  r.code_ = compile(text, PCRE2_UTF | PCRE2_LITERAL, where);  // UCP is meaningless here
  return r;
}

void Regex::find_all(std::string_view text, std::vector<ByteSpan>& out) const {
  out.clear();
  const auto* code = static_cast<const pcre2_code*>(code_.get());
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t start = 0;
  while (start <= text.size()) {
    // The caller validated the text once; re-checking UTF-8 at every match would be quadratic.
    const int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      throw std::runtime_error("regex match failed: " + pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    out.emplace_back(ov[0], ov[1]);
    if (ov[1] > ov[0]) {
      start = ov[1];
    } else if (ov[1] < text.size()) {
      start = ov[1] + utf8_length(static_cast<unsigned char>(text[ov[1]]));
    } else {
      break;
    }
  }
  pcre2_match_data_free(md);
}

}  // namespace peftrun::tok
