#include "runtime/tokenizer/model_tokens.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "runtime/io/sha256.h"
#include "runtime/tokenizer/json_fields.h"

namespace peftrun {

namespace {

namespace fs = std::filesystem;
using tok::Json;

// The file's text, or nullopt when it does not exist.
std::optional<std::string> read_optional(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

Json parse(const std::string& text, const fs::path& path) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw std::runtime_error(path.string() + ": not valid JSON: " + e.what());
  }
}

// bos_token / eos_token: "text", {"content": "text", ...} or null/absent ("").
std::string token_text(const Json& config, const char* key, const std::string& where) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return tok::json_string(*it, "content", where + "." + key);
  tok::json_fail(where + "." + key,
                 "expected a string or {\"content\": ...}, got " + tok::json_excerpt(*it));
}

// eos_token_id: an id, a list of ids (the first is the one to append) or null/absent.
std::optional<std::int32_t> token_id(const Json& config, const char* key,
                                     const std::string& where) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  const Json& v = it->is_array() && !it->empty() ? (*it)[0] : *it;
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
    tok::json_fail(where + "." + key,
                   "expected a token id or a list of ids, got " + tok::json_excerpt(*it));
  }
  return v.get<std::int32_t>();
}

}  // namespace

ModelTokens read_model_tokens(const std::string& tokenizer_path, const Tokenizer& tokenizer) {
  std::error_code ec;
  const fs::path dir = fs::is_directory(tokenizer_path, ec)
                           ? fs::path(tokenizer_path)
                           : fs::path(tokenizer_path).parent_path();
  ModelTokens m;
  Sha256 digest;
  digest.update(tokenizer.digest());
  auto load = [&](const char* name) -> std::optional<Json> {
    const auto text = read_optional(dir / name);
    digest.update(name);
    digest.update(text ? sha256_hex(*text) : std::string(":absent"));
    if (!text) return std::nullopt;
    return parse(*text, dir / name);
  };
  const std::optional<Json> tcfg = load("tokenizer_config.json");
  const std::optional<Json> gen = load("generation_config.json");
  const std::optional<Json> model = load("config.json");
  const std::optional<std::string> jinja = read_optional(dir / "chat_template.jinja");
  digest.update("chat_template.jinja");
  digest.update(jinja ? sha256_hex(*jinja) : std::string(":absent"));
  const std::string tcfg_where = (dir / "tokenizer_config.json").string();

  auto lookup = [&](const std::string& text, const char* key) -> std::int32_t {
    const auto id = tokenizer.token_to_id(text);
    if (!id) {
      throw std::runtime_error(tcfg_where + ": " + key + " '" + text +
                               "' is not in the vocabulary of " + tokenizer.source());
    }
    return *id;
  };
  if (tcfg) {
    if (!tcfg->is_object()) tok::json_fail(tcfg_where, "expected a JSON object");
    m.bos_token = token_text(*tcfg, "bos_token", tcfg_where);
    m.eos_token = token_text(*tcfg, "eos_token", tcfg_where);
    if (!m.bos_token.empty()) m.bos_id = lookup(m.bos_token, "bos_token");
    if (!m.eos_token.empty()) m.eos_id = lookup(m.eos_token, "eos_token");
    const auto it = tcfg->find("chat_template");
    if (it != tcfg->end() && it->is_string()) {
      m.chat_template = it->get<std::string>();
    } else if (it != tcfg->end() && it->is_array()) {
      for (const Json& entry : *it) {
        if (!entry.is_object() || !entry.contains("template")) continue;
        const bool is_default = entry.value("name", std::string()) == "default";
        if (m.chat_template.empty() || is_default) {
          m.chat_template = tok::json_string(entry, "template", tcfg_where + ".chat_template");
        }
      }
    }
    if (!m.chat_template.empty()) m.chat_template_source = tcfg_where;
  }
  if (m.chat_template.empty() && jinja) {
    m.chat_template = *jinja;
    m.chat_template_source = (dir / "chat_template.jinja").string();
  }
  // Ids tokenizer_config.json did not give: generation_config.json, then config.json.
  for (const auto* source : {&gen, &model}) {
    if (!*source || !(*source)->is_object()) continue;
    const std::string where =
        (dir / (source == &gen ? "generation_config.json" : "config.json")).string();
    if (!m.eos_id) m.eos_id = token_id(**source, "eos_token_id", where);
    if (!m.bos_id) m.bos_id = token_id(**source, "bos_token_id", where);
  }
  if (m.eos_id && m.eos_token.empty()) m.eos_token = tokenizer.id_to_token(*m.eos_id).value_or("");
  if (m.bos_id && m.bos_token.empty()) m.bos_token = tokenizer.id_to_token(*m.bos_id).value_or("");

  // BOS/EOS around every document: tokenizer_config.json's flags decide when present (the Llama
  // fast tokenizer rebuilds its template from them), else tokenizer.json's template.
  m.prefix = tokenizer.post_processor().prefix;
  m.suffix = tokenizer.post_processor().suffix;
  if (tcfg) {
    const bool add_bos = tok::json_bool_or(*tcfg, "add_bos_token", !m.prefix.empty(), tcfg_where);
    const bool add_eos = tok::json_bool_or(*tcfg, "add_eos_token", !m.suffix.empty(), tcfg_where);
    if (tcfg->contains("add_bos_token") && !(*tcfg)["add_bos_token"].is_null()) {
      m.prefix.clear();
      if (add_bos && m.bos_id) m.prefix.push_back(*m.bos_id);
    }
    if (tcfg->contains("add_eos_token") && !(*tcfg)["add_eos_token"].is_null()) {
      m.suffix.clear();
      if (add_eos && m.eos_id) m.suffix.push_back(*m.eos_id);
    }
  }
  m.digest = digest.finish_hex();
  return m;
}

std::string ModelTokens::describe(const Tokenizer& tokenizer) const {
  auto names = [&](const std::vector<std::int32_t>& ids) {
    std::string s;
    for (std::int32_t id : ids) {
      if (!s.empty()) s += ' ';
      s += tokenizer.id_to_token(id).value_or("?");
    }
    return s.empty() ? std::string("nothing") : s;
  };
  return "BOS " + (bos_id ? bos_token + " (" + std::to_string(*bos_id) + ")" : "none") + ", EOS " +
         (eos_id ? eos_token + " (" + std::to_string(*eos_id) + ")" : "none") +
         "; each document starts with " + names(prefix) + " and ends with " + names(suffix);
}

}  // namespace peftrun
