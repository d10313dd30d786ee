#include "runtime/tokenizer/post_processor.h"

namespace peftrun::tok {

namespace {

void parse_into(const Json& spec, const std::string& where, PostProcessor& out) {
  if (spec.is_null()) return;
  const std::string type = json_type(spec, where);
  if (type == "ByteLevel") return;  // adjusts offsets, adds no tokens
  if (type == "Sequence") {
    const Json& list = json_array(spec, "processors", where);
    for (std::size_t i = 0; i < list.size(); ++i) {
      parse_into(list[i], where + ".processors[" + std::to_string(i) + "]", out);
    }
    return;
  }
  if (type != "TemplateProcessing") {
    json_fail(where, "post_processor type '" + type +
                         "' is not supported (supported: TemplateProcessing, ByteLevel, "
                         "Sequence)");
  }
  const Json& single = json_array(spec, "single", where);
  const Json& specials = json_field(spec, "special_tokens", where);
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const Json& piece = single[i];
    const std::string at = where + ".single[" + std::to_string(i) + "]";
    if (piece.is_object() && piece.contains("Sequence")) {
      if (seen_sequence) json_fail(at, "a single-sequence template holds $A twice");
      seen_sequence = true;
      continue;
    }
    if (!piece.is_object() || !piece.contains("SpecialToken")) {
      json_fail(at, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}, got " +
                        json_excerpt(piece));
    }
    const std::string name = json_string(piece["SpecialToken"], "id", at + ".SpecialToken");
    const Json& entry = json_field(specials, name.c_str(), where + ".special_tokens");
    const Json& ids = json_array(entry, "ids", where + ".special_tokens." + name);
    for (const Json& id : ids) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0) {
        json_fail(where + ".special_tokens." + name + ".ids",
                  "expected non-negative integers, got " + json_excerpt(id));
      }
      (seen_sequence ? out.suffix : out.prefix).push_back(id.get<std::int32_t>());
    }
  }
  if (!seen_sequence) json_fail(where + ".single", "the template has no $A sequence");
}

}  // namespace

PostProcessor PostProcessor::parse(const Json& spec, const std::string& where) {
  PostProcessor p;
  parse_into(spec, where, p);
  return p;
}

}  // namespace peftrun::tok
