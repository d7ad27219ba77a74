/* ingest_i18n.c: the one message table of ingest's problem details, English and Japanese (docs/http.md). */
#include "ingest_i18n.h"

#include <string.h>

#include "kpi_http.h"

static const char *const lang_tags[INGEST_LANG_COUNT] = {"en", "ja"};

ingest_lang ingest_lang_of(const char *al) {
  return (ingest_lang)kpi_http_accept_language(al, lang_tags, INGEST_LANG_COUNT);
}

const char *ingest_lang_tag(ingest_lang lang) {
  return (unsigned)lang < INGEST_LANG_COUNT ? lang_tags[lang] : lang_tags[0];
}

/* Japanese titles for the statuses ingest answers with a problem; the English ones are
 * kpi_http_reason's, so that one status never has two English names. */
static const struct {
  int status;
  const char *ja;
} titles[] = {
    {400, "リクエストが正しくありません"},
    {401, "認証が必要です"},
    {403, "この操作は許可されていません"},
    {404, "見つかりません"},
    {405, "このメソッドは使えません"},
    {408, "リクエストが時間切れになりました"},
    {413, "リクエストが大きすぎます"},
    {414, "URI が長すぎます"},
    {415, "この形式には対応していません"},
    {422, "入力内容に誤りがあります"},
    {429, "混み合っています"},
    {431, "ヘッダーが大きすぎます"},
    {500, "サーバー内部のエラーです"},
    {501, "このメソッドには対応していません"},
    {503, "一時的に利用できません"},
};

const char *ingest_title(ingest_lang lang, int status) {
  if (lang == INGEST_LANG_JA)
    for (size_t i = 0; i < sizeof(titles) / sizeof(titles[0]); i++)
      if (titles[i].status == status) return titles[i].ja;
  return kpi_http_reason(status);
}

/* Every detail ingest writes into a problem, keyed by its English text. The field names,
 * codes and media types in them stay as they are: they are what the client sends. */
static const struct {
  const char *en;
  const char *ja;
} texts[] = {
    {"Content-Type must be application/json",
     "Content-Type は application/json にしてください"},
    {"Content-Type must be application/json (an array), application/x-ndjson or text/csv",
     "Content-Type は application/json（配列）、application/x-ndjson、text/csv のいずれかにして"
     "ください"},
    {"text/csv is read as charset=utf-8 (the default) or charset=Shift_JIS (CP932)",
     "text/csv は charset=utf-8（既定）か charset=Shift_JIS（CP932）で送ってください"},
    {"Idempotency-Key must be a UUID", "Idempotency-Key は UUID で指定してください"},
    {"atomic must be true or false", "atomic は true か false で指定してください"},
    {"the body is not valid UTF-8", "本文が正しい UTF-8 ではありません"},
    {"the body is not valid Shift_JIS (CP932)", "本文が正しい Shift_JIS（CP932）ではありません"},
    {"the body is not valid JSON", "本文が正しい JSON ではありません"},
    {"a batch is a JSON array of measurements", "一括報告は測定値の JSON 配列で送ってください"},
    {"the batch is empty", "一括報告に項目がありません"},
    {"a batch holds at most %zu items", "一括報告は %zu 件までです"},
    {"invalid items: %zu of %zu; nothing was published (atomic=true)",
     "誤りのある項目: %zu 件（全 %zu 件中）。何も登録していません（atomic=true）"},
    {"this department may not report this record", "この部署はこの指標を報告できません"},
    {"every item is a measure owned by another department",
     "どの項目も他の部署の指標です"},
    {"the measurement breaks the schema or the catalog",
     "入力内容に誤りがあります。errors の各項目（field）を直して送り直してください"},
    {"a bearer token is required", "アクセストークン（Bearer）が必要です"},
    {"the bearer token is not valid", "アクセストークンが正しくありません"},
    {"the broker is not reachable yet",
     "受付の保存先（Kafka）にまだつながりません。しばらくして送り直してください"},
    {"the producer queue is full; retry shortly",
     "送信待ちがいっぱいです。少し待って送り直してください"},
    {"the producer queue is full; nothing was published",
     "送信待ちがいっぱいのため、何も登録していません。少し待って送り直してください"},
    {"the record was not acknowledged by Kafka in time",
     "時間内に保存を確認できませんでした。同じ event_id で送り直してください"},
    {"the records were not acknowledged by Kafka in time",
     "時間内に保存を確認できませんでした。同じ event_id で送り直してください"},
    {"no random bytes for an event_id", "event_id を作れませんでした（乱数が得られません）"},
    {"out of memory", "サーバーのメモリが足りません"},
    {"the page was not built into this binary", "このサーバーには入力ページが入っていません"},
    {"shutting down", "停止中です"},
    {"no such resource", "このアドレスには何もありません"},
    {"the event_id in the path must be a UUID",
     "アドレスの event_id は UUID で指定してください"},
    {"only the measure's owner may retract its measurements",
     "この指標の報告を取り消せるのは、指標を担当する部署だけです"},
    {"the retraction breaks the schema or the catalog",
     "取消の内容に誤りがあります。errors の各項目（field）を直して送り直してください"},
    {"no such measure in the catalog", "この指標は指標一覧（カタログ）にありません"},
    {"only the measure's owner may acknowledge it",
     "対応方針を登録できるのは、指標を担当する部署だけです"},
    {"the acknowledgement breaks the schema",
     "対応方針の内容に誤りがあります。errors の各項目（field）を直して送り直してください"},
};

const char *ingest_text(ingest_lang lang, const char *en) {
  if (lang != INGEST_LANG_JA || !en) return en;
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
    if (strcmp(texts[i].en, en) == 0) return texts[i].ja;
  return en;
}

size_t ingest_text_count(void) { return sizeof(texts) / sizeof(texts[0]); }

void ingest_text_at(size_t i, const char **en, const char **ja) {
  *en = texts[i].en;
  *ja = texts[i].ja;
}
