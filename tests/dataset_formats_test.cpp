// The JSONL dataset formats on real tokenizer fixtures (tests/tokenizer/fixtures): which tokens
// are trained (prompt and non-assistant tokens masked), the built-in chat templates' exact
// text, BOS/EOS per model family, and malformed lines reported as FILE:LINE or skipped.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/data/chat_template.h"
#include "runtime/data/example_formats.h"
#include "runtime/data/jsonl_reader.h"
#include "runtime/data/tokenized_corpus.h"
#include "runtime/tokenizer/model_tokens.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/support/scratch_dir.h"

namespace peftrun {
namespace {

using testing_support::ScratchDir;
const std::string kFixtures = std::string(PEFTRUN_SOURCE_DIR) + "/tests/tokenizer/fixtures/";

struct Family {
  explicit Family(const std::string& style)
      : tokenizer(Tokenizer::load(kFixtures + style)),
        tokens(read_model_tokens(kFixtures + style, tokenizer)) {}
  Tokenizer tokenizer;
  ModelTokens tokens;

  TokenizedExample tokenize(const std::string& json, DataFormat format,
                            ChatTemplate tmpl = ChatTemplate::kAuto, bool append_eos = true) const {
    const FormatContext c{tokenizer, tokens, tmpl, append_eos};
    return tokenize_example(nlohmann::json::parse(json), format, c);
  }
  // The text of the trained tokens, and of the others.
  std::string trained_text(const TokenizedExample& ex, bool trained) const {
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i < ex.ids.size(); ++i) {
      if ((ex.trained[i] != 0) == trained) ids.push_back(ex.ids[i]);
    }
    return tokenizer.decode(ids, false);
  }
};

std::int32_t id(const Family& f, const std::string& token) {
  return f.tokenizer.token_to_id(token).value();
}

TEST(ModelTokens, BosAndEosFollowEachFamilysConvention) {
  const Family llama2("llama2"), llama3("llama3"), qwen2("qwen2"), gpt2("gpt2");
  // Llama 2: <s> before every document (add_bos_token), EOS </s>, nothing after.
  EXPECT_EQ(llama2.tokens.prefix, std::vector<std::int32_t>{id(llama2, "<s>")});
  EXPECT_TRUE(llama2.tokens.suffix.empty());
  EXPECT_EQ(llama2.tokens.eos_id, id(llama2, "</s>"));
  // Llama 3: <|begin_of_text|> from tokenizer.json's TemplateProcessing; EOS from the config.
  EXPECT_EQ(llama3.tokens.prefix, std::vector<std::int32_t>{id(llama3, "<|begin_of_text|>")});
  EXPECT_EQ(llama3.tokens.eos_id, id(llama3, "<|eot_id|>"));
  // Gemma: <bos> from tokenizer.json's TemplateProcessing, EOS <eos>.
  const Family gemma("gemma");
  EXPECT_EQ(gemma.tokens.prefix, std::vector<std::int32_t>{id(gemma, "<bos>")});
  EXPECT_EQ(gemma.tokens.eos_id, id(gemma, "<eos>"));
  // Qwen2: no BOS at all.
  EXPECT_TRUE(qwen2.tokens.prefix.empty());
  EXPECT_FALSE(qwen2.tokens.bos_id.has_value());
  EXPECT_EQ(qwen2.tokens.eos_id, id(qwen2, "<|im_end|>"));
  // GPT-2: add_bos_token false although a BOS exists.
  EXPECT_TRUE(gpt2.tokens.prefix.empty());
  EXPECT_EQ(gpt2.tokens.bos_id, id(gpt2, "<|endoftext|>"));
}

TEST(ModelTokens, GenerationConfigSuppliesAMissingEos) {
  ScratchDir d("model_tokens");
  std::filesystem::copy_file(kFixtures + "qwen2/tokenizer.json", d.file("tokenizer.json"));
  d.write("generation_config.json", R"({"eos_token_id": [2, 1]})");
  const Tokenizer t = Tokenizer::load(d.path().string());
  const ModelTokens m = read_model_tokens(d.path().string(), t);
  EXPECT_EQ(m.eos_id, 2);
  EXPECT_EQ(m.eos_token, "<|im_end|>");
  d.write("tokenizer_config.json", R"({"eos_token": "<nope>"})");
  try {
    read_model_tokens(d.path().string(), t);
    FAIL() << "accepted an EOS outside the vocabulary";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json: eos_token '<nope>'"),
              std::string::npos)
        << e.what();
  }
}

TEST(DatasetFormats, TextTrainsEveryTokenBetweenBosAndEos) {
  const Family f("llama2");
  const TokenizedExample ex =
      f.tokenize(R"({"text": "The river carried boats."})", DataFormat::kText);
  ASSERT_GE(ex.ids.size(), 3u);
  EXPECT_EQ(ex.ids.front(), id(f, "<s>"));
  EXPECT_EQ(ex.ids.back(), id(f, "</s>"));
  EXPECT_EQ(ex.trained.front(), 0);  // BOS is context (and never a target anyway)
  for (std::size_t i = 1; i < ex.ids.size(); ++i) EXPECT_EQ(ex.trained[i], 1) << i;
  const std::vector<std::int32_t> body(ex.ids.begin() + 1, ex.ids.end() - 1);
  EXPECT_EQ(body, f.tokenizer.encode_ids("The river carried boats.", false));
  // An empty text is no document at all, not BOS -> EOS.
  EXPECT_TRUE(f.tokenize(R"({"text": ""})", DataFormat::kText).ids.empty());
  // append_eos: false leaves the EOS out.
  const TokenizedExample no_eos =
      f.tokenize(R"({"text": "The river"})", DataFormat::kText, ChatTemplate::kAuto, false);
  EXPECT_NE(no_eos.ids.back(), id(f, "</s>"));
}

TEST(DatasetFormats, PromptCompletionTrainsOnlyTheCompletion) {
  for (const char* style : {"qwen2", "llama2", "llama3", "mistral"}) {
    const Family f(style);
    const TokenizedExample ex = f.tokenize(
        R"({"prompt": "Question: what is 2+2?\nAnswer:", "completion": " four, of course."})",
        DataFormat::kPromptCompletion);
    // The whole string is encoded in one piece, exactly as at inference.
    std::vector<std::int32_t> expected = f.tokens.prefix;
    for (std::int32_t i :
         f.tokenizer.encode_ids("Question: what is 2+2?\nAnswer: four, of course.", false)) {
      expected.push_back(i);
    }
    expected.push_back(*f.tokens.eos_id);
    EXPECT_EQ(ex.ids, expected) << style;
    std::string trained = f.trained_text(ex, true);
    EXPECT_EQ(f.trained_text(ex, false).find("four"), std::string::npos) << style;
    EXPECT_NE(trained.find("four, of course."), std::string::npos) << style << ": " << trained;
    EXPECT_EQ(trained.find("Answer"), std::string::npos) << style << ": " << trained;
    EXPECT_EQ(ex.trained.back(), 1) << style << ": the EOS ends the completion";
  }
}

TEST(ChatTemplates, RenderExactlyWhatTheFamiliesTemplatesRender) {
  const std::vector<ChatMessage> chat = {{"system", "Be brief."},
                                         {"user", "Hi!"},
                                         {"assistant", " Hello. "},
                                         {"user", "Bye"},
                                         {"assistant", "Bye!"}};
  auto trained = [](const RenderedChat& r) {
    std::string s;
    for (const auto& [b, e] : r.trained) {
      s += '[';
      s.append(r.text, b, e - b);
      s += ']';
    }
    return s;
  };
  const RenderedChat chatml = render_chat(ChatTemplate::kChatml, chat, "", "<|im_end|>");
  EXPECT_EQ(chatml.text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
            "<|im_start|>assistant\n Hello. <|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
            "<|im_start|>assistant\nBye!<|im_end|>\n");
  EXPECT_EQ(trained(chatml), "[ Hello. <|im_end|>][Bye!<|im_end|>]");
  const RenderedChat llama3 = render_chat(ChatTemplate::kLlama3, chat, "<B>", "<|eot_id|>");
  EXPECT_EQ(llama3.text,
            "<B><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nBye!<|eot_id|>");
  EXPECT_EQ(trained(llama3), "[Hello.<|eot_id|>][Bye!<|eot_id|>]");
  const RenderedChat llama2 = render_chat(ChatTemplate::kLlama2, chat, "<s>", "</s>");
  EXPECT_EQ(llama2.text,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Bye "
            "[/INST] Bye! </s>");
  EXPECT_EQ(trained(llama2), "[ Hello. </s>][ Bye! </s>]");
  const RenderedChat mistral = render_chat(ChatTemplate::kMistral, chat, "<s>", "</s>");
  EXPECT_EQ(mistral.text,
            "<s>[INST] Be brief.\n\nHi! [/INST] Hello. </s>[INST] Bye [/INST]Bye!</s>");
  EXPECT_EQ(trained(mistral), "[ Hello. </s>][Bye!</s>]");
  // Rendered by transformers' own Jinja (render_jinja_template) from Gemma 3's template, which
  // tests/tokenizer/fixtures/gemma/tokenizer_config.json carries verbatim.
  const RenderedChat gemma = render_chat(ChatTemplate::kGemma, chat, "<B>", "<eos>");
  EXPECT_EQ(gemma.text,
            "<B><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\n"
            "Hello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
            "Bye!<end_of_turn>\n");
  EXPECT_EQ(trained(gemma), "[Hello.<end_of_turn>][Bye!<end_of_turn>]");
  // The system text is not stripped, the turns are.
  EXPECT_EQ(render_chat(ChatTemplate::kGemma,
                        {{"system", " You count. "}, {"user", " One? "}, {"assistant", "Two."}},
                        "<B>", "<eos>")
                .text,
            "<B><start_of_turn>user\n You count. \n\nOne?<end_of_turn>\n<start_of_turn>model\n"
            "Two.<end_of_turn>\n");
  EXPECT_THROW(render_chat(ChatTemplate::kGemma, {{"user", "a"}, {"user", "b"}}, "<B>", ""),
               std::invalid_argument);

  EXPECT_THROW(render_chat(ChatTemplate::kLlama2, {{"assistant", "x"}}, "<s>", "</s>"),
               std::invalid_argument);
  EXPECT_THROW(render_chat(ChatTemplate::kChatml, {{"robot", "x"}}, "", ""), std::invalid_argument);
  EXPECT_THROW(render_chat(ChatTemplate::kChatml, {{"user", "a"}, {"system", "b"}}, "", ""),
               std::invalid_argument);
}

TEST(ChatTemplates, DetectedFromTheTokenizersOwnTemplate) {
  const std::pair<const char*, ChatTemplate> cases[] = {
      {"qwen2", ChatTemplate::kChatml},    {"smollm", ChatTemplate::kChatml},
      {"llama3", ChatTemplate::kLlama3},   {"llama2", ChatTemplate::kLlama2},
      {"mistral", ChatTemplate::kMistral}, {"gemma", ChatTemplate::kGemma}};
  for (const auto& [style, expected] : cases) {
    const Family f(style);
    EXPECT_EQ(detect_chat_template(f.tokens.chat_template), expected) << style;
  }
  EXPECT_EQ(detect_chat_template("{{ messages }}"), ChatTemplate::kAuto);
}

TEST(DatasetFormats, ChatTrainsOnlyAssistantReplies) {
  const std::string conversation =
      R"({"messages": [{"role": "system", "content": "You count."},
                       {"role": "user", "content": "One?"},
                       {"role": "assistant", "content": "Two."},
                       {"role": "user", "content": "Three?"},
                       {"role": "assistant", "content": "Four."}]})";
  const std::pair<const char*, ChatTemplate> cases[] = {{"qwen2", ChatTemplate::kChatml},
                                                        {"llama3", ChatTemplate::kLlama3},
                                                        {"llama2", ChatTemplate::kLlama2},
                                                        {"mistral", ChatTemplate::kMistral},
                                                        {"gemma", ChatTemplate::kGemma}};
  for (const auto& [style, tmpl] : cases) {
    const Family f(style);
    const TokenizedExample ex = f.tokenize(conversation, DataFormat::kChat, tmpl);
    const std::string trained = f.trained_text(ex, true);
    const std::string context = f.trained_text(ex, false);
    for (const char* reply : {"Two.", "Four."}) {
      EXPECT_NE(trained.find(reply), std::string::npos) << style << ": " << trained;
      EXPECT_EQ(context.find(reply), std::string::npos) << style << ": " << context;
    }
    for (const char* prompt : {"You count.", "One?", "Three?"}) {
      EXPECT_EQ(trained.find(prompt), std::string::npos) << style << ": " << trained;
      EXPECT_NE(context.find(prompt), std::string::npos) << style << ": " << context;
    }
    // The end-of-turn token after each reply is trained, so the model learns to stop.
    const std::string end = tmpl == ChatTemplate::kChatml   ? "<|im_end|>"
                            : tmpl == ChatTemplate::kLlama3 ? "<|eot_id|>"
                            : tmpl == ChatTemplate::kGemma  ? "<end_of_turn>"
                                                            : "</s>";
    int trained_ends = 0;
    for (std::size_t i = 0; i < ex.ids.size(); ++i) {
      trained_ends += ex.trained[i] && ex.ids[i] == id(f, end) ? 1 : 0;
    }
    EXPECT_EQ(trained_ends, 2) << style;
    // Same ids as encoding the rendered conversation in one piece.
    const ModelTokens& t = f.tokens;
    const RenderedChat r = render_chat(tmpl,
                                       {{"system", "You count."},
                                        {"user", "One?"},
                                        {"assistant", "Two."},
                                        {"user", "Three?"},
                                        {"assistant", "Four."}},
                                       t.bos_token, t.eos_token);
    EXPECT_EQ(ex.ids, f.tokenizer.encode_ids(r.text, false)) << style;
  }
}

TEST(DatasetFormats, MalformedExamplesSayWhatIsWrong) {
  const Family f("qwen2");
  auto message = [&](const std::string& json, DataFormat format) -> std::string {
    try {
      f.tokenize(json, format, ChatTemplate::kChatml);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_EQ(message(R"({"txt": "a"})", DataFormat::kText), "missing key \"text\"");
  EXPECT_EQ(message(R"({"text": 3})", DataFormat::kText), "\"text\" is number, expected a string");
  EXPECT_EQ(message(R"(["a"])", DataFormat::kText), "expected a JSON object, got array");
  EXPECT_EQ(message(R"({"prompt": "a"})", DataFormat::kPromptCompletion),
            "missing key \"completion\"");
  EXPECT_EQ(message(R"({"messages": {}})", DataFormat::kChat),
            "\"messages\" is object, expected a list of {\"role\", \"content\"} objects");
  EXPECT_EQ(message(R"({"messages": [{"role": "user"}]})", DataFormat::kChat),
            "message 0: missing key \"content\"");
  EXPECT_EQ(message(R"({"messages": []})", DataFormat::kChat), "'messages' is empty");
}

TEST(DatasetFormats, MalformedLinesFailWithFileAndLineOrAreSkippedAndCounted) {
  ScratchDir d("bad_lines");
  const std::string path = d.write("train.jsonl",
                                   "{\"text\": \"first line\"}\n"
                                   "\n"  // blank lines are not documents
                                   "{\"text\": \"third\"\n"
                                   "{\"txt\": \"fourth\"}\n"
                                   "{\"text\": \"\"}\n"
                                   "{\"text\": \"last \xFF\"}\n"
                                   "{\"text\": \"really last\"}\r\n");
  const Family f("qwen2");
  const FormatContext c{f.tokenizer, f.tokens, ChatTemplate::kAuto, true};
  CorpusStats stats;
  try {
    tokenize_jsonl(path, DataFormat::kText, c, false, stats);
    FAIL() << "accepted a malformed line";
  } catch (const DataLineError& e) {
    EXPECT_EQ(e.line, 3u);
    EXPECT_EQ(std::string(e.what()).rfind(path + ":3: not valid JSON: column", 0), 0u) << e.what();
  }
  stats = CorpusStats{};
  const TokenizedCorpus corpus = tokenize_jsonl(path, DataFormat::kText, c, true, stats);
  EXPECT_EQ(stats.lines, 6u);
  EXPECT_EQ(stats.bad_lines, 3u);  // lines 3, 4 and 6 (invalid UTF-8)
  EXPECT_EQ(stats.first_bad.rfind(path + ":3:", 0), 0u) << stats.first_bad;
  // An empty text is well-formed but gives nothing to predict: dropped and counted.
  EXPECT_EQ(stats.no_target, 1u);
  ASSERT_EQ(corpus.num_docs(), 2u);
  std::vector<std::int32_t> last(corpus.tokens.begin() + corpus.doc_offsets[1],
                                 corpus.tokens.end());
  EXPECT_EQ(f.tokenizer.decode(last, false), "really last<|im_end|>");
}

}  // namespace
}  // namespace peftrun
