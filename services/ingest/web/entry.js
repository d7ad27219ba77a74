// services/ingest/web/entry.js: the entry page's behaviour: the token (memory, or
// sessionStorage when asked; never a cookie), the department's measures from /v1/me, one
// measurement as JSON, a CSV file previewed and then sent as text/csv, and every answer shown
// in Japanese. Text is only ever set with textContent: nothing from a file or an answer
// becomes markup.
'use strict';

(function () {
  const STORE_KEY = 'kpi-entry-token';
  let token = '';
  let measures = [];
  let csvFile = null; // {bytes: ArrayBuffer, charset: 'utf-8' | 'Shift_JIS', rows: [...]}

  const $ = (id) => document.getElementById(id);

  // ---- messages ----

  const FIELD_LABELS = {
    '': '全体',
    measure_id: '施策・指標',
    observed_at: '観測日',
    value: '値',
    unit: '単位',
    component: '比率の内訳',
    note: '備考',
    event_id: 'event_id',
    department: '担当課',
    atomic: 'atomic',
  };

  // problem+json errors[].code → Japanese (proto/openapi.yaml, FieldError).
  const CODE_MESSAGES = {
    missing: '入力してください。',
    type: '形式が正しくありません（数値で入力してください）。',
    empty: '空にはできません。',
    too_long: '長すぎます（備考は 1 KiB＝全角約 340 文字まで）。',
    format: '書式が正しくありません（日付は 2024-03-31、2024/3/31、R6.3.31、令和6年3月31日 など。実在する日付で）。',
    range: '値が範囲外です（負の数、100 を超える百分率、0/1 以外の達成状況など）。',
    out_of_range: '値が大きすぎます（この指標の上限を超えています）。',
    value: '使用できない値です。',
    unknown_field: '認識できない項目（列）です。',
    encoding: '文字コードが正しくありません（UTF-8 または Shift_JIS で保存してください）。',
    syntax: '書式（JSON / CSV）が正しくありません。',
    unknown_measure: '登録されていない施策です。',
    unit_mismatch: '単位が指標の単位と一致しません。',
    component_unit: '比率の分子・分母は件数で報告します（％は使えません）。',
    not_allowed: 'この指標では指定できません（比率の指標のみ）。',
    future: '未来の日付は登録できません。',
    forbidden: '他の課が担当する施策です。',
    unavailable: '現在受け付けできません。しばらくしてから再送してください。',
    queue_full: '混み合っています。数秒後に再送してください。',
    arity: '列の数が見出し行と一致しません。',
    duplicate: '見出しに同じ列が 2 回あります。',
  };

  const STATUS_MESSAGES = {
    400: '送信内容を読み取れませんでした。',
    401: 'トークンが正しくありません。',
    403: '他の課が担当する施策は登録できません。',
    413: 'データが大きすぎます（件数または容量の上限を超えています）。',
    415: 'ファイルの形式または文字コードに対応していません。',
    422: '入力内容に誤りがあります。',
    429: '混み合っています。数秒後に再送してください。',
    500: 'サーバーでエラーが発生しました。再送してください。',
    503: '現在受け付けできません。しばらくしてから再送してください。',
  };

  const UNIT_LABELS = {
    person: '人', case: '件', school: '校', facility: '施設', percent: '%', plan: '計画',
  };
  const KIND_LABELS = {
    level: '水準値', cumulative: '累計（期間中の件数を加算）', ratio: '比率（分子・分母を別々に報告）',
    maintain: '維持', milestone: '達成状況（0＝未達成、1＝達成）',
  };

  function errorText(e) {
    const label = Object.prototype.hasOwnProperty.call(FIELD_LABELS, e.field) ? FIELD_LABELS[e.field] : e.field;
    const msg = CODE_MESSAGES[e.code] || e.message || e.code;
    return label + '：' + msg;
  }

  function statusText(status) {
    return STATUS_MESSAGES[status] || ('エラー（HTTP ' + status + '）');
  }

  function el(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    if (cls) n.className = cls;
    return n;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // ---- HTTP ----

  async function call(method, path, body, contentType) {
    // Accept-Language: the server's problem titles and details come back in Japanese too.
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json', 'Accept-Language': 'ja' };
    if (contentType) headers['Content-Type'] = contentType;
    let res;
    try {
      res = await fetch(path, { method, headers, body, credentials: 'omit', cache: 'no-store' });
    } catch (err) {
      return { status: 0, doc: null };
    }
    let doc = null;
    try {
      doc = await res.json();
    } catch (err) {
      doc = null;
    }
    return { status: res.status, doc };
  }

  // ---- token and /v1/me ----

  async function loadMe(ev) {
    if (ev) ev.preventDefault();
    token = $('token').value.trim();
    const status = $('auth-status');
    if (!token) {
      status.textContent = 'トークンを入力してください。';
      return;
    }
    if ($('remember').checked) sessionStorage.setItem(STORE_KEY, token);
    else sessionStorage.removeItem(STORE_KEY);
    status.textContent = '読み込み中…';
    const r = await call('GET', '/v1/me');
    if (r.status !== 200 || !r.doc) {
      status.textContent = r.status === 0 ? 'サーバーに接続できません。' : statusText(r.status);
      $('entry-section').hidden = true;
      $('csv-section').hidden = true;
      return;
    }
    measures = r.doc.measures || [];
    const dep = r.doc.department || {};
    status.textContent = (dep.name || dep.id) + ' として読み込みました（担当施策 ' + measures.length + ' 件）。';
    $('department').textContent = '担当課：' + (dep.name || '') + '（' + (dep.id || '') + '）';
    const sel = $('measure');
    clear(sel);
    for (const m of measures) {
      const o = el('option', m.name + ' — ' + m.indicator + '（' + m.id + '）');
      o.value = m.id;
      sel.appendChild(o);
    }
    $('entry-section').hidden = false;
    $('csv-section').hidden = false;
    onMeasureChange();
  }

  function forget() {
    token = '';
    $('token').value = '';
    sessionStorage.removeItem(STORE_KEY);
    measures = [];
    $('entry-section').hidden = true;
    $('csv-section').hidden = true;
    $('auth-status').textContent = 'トークンを消去しました。';
  }

  function currentMeasure() {
    const id = $('measure').value;
    return measures.find((m) => m.id === id) || null;
  }

  function onMeasureChange() {
    const m = currentMeasure();
    if (!m) return;
    const unit = UNIT_LABELS[m.unit] || m.unit;
    const ratio = m.component_required;
    // The words the server accepts for the unit (GET /v1/me: units, component_units).
    const accepted = (ratio ? m.component_units : m.units) || [];
    const countUnit = ratio && accepted.length > 1 ? accepted[1] : '件数';
    $('unit-label').textContent = ratio ? '（' + countUnit + '）' : '（' + unit + '）';
    $('measure-info').textContent = '種類：' + (KIND_LABELS[m.kind] || m.kind) + '。基準値 ' +
      m.baseline.value + '（' + m.baseline.fy + '年度）→ 目標 ' + m.target.value + '（' +
      m.target.fy + '年度）。単位：' + unit + '。' +
      (accepted.length ? (ratio ? '分子・分母の単位' : 'CSV で使える単位') + '：' + accepted.join('・') + '。' : '');
    $('component-fieldset').hidden = !ratio;
    const v = $('value');
    v.min = String(m.value_min);
    v.max = String(m.value_max);
    v.step = m.kind === 'milestone' ? '1' : 'any';
    $('value-help').textContent = m.kind === 'milestone' ? '0（未達成）または 1（達成）' :
      (m.value_min + ' 以上 ' + m.value_max + ' 以下');
    clearFieldErrors();
  }

  // ---- one measurement ----

  const FIELD_ERROR_IDS = {
    measure_id: 'measure-error', observed_at: 'observed-at-error', value: 'value-error',
    unit: 'measure-error', component: 'component-error', note: 'note-error',
  };

  function clearFieldErrors() {
    for (const id of Object.values(FIELD_ERROR_IDS)) {
      const n = $(id);
      n.textContent = '';
      n.hidden = true;
    }
    for (const id of ['measure', 'observed-at', 'value', 'note']) $(id).removeAttribute('aria-invalid');
  }

  function showFieldErrors(errors) {
    const inputs = { measure_id: 'measure', observed_at: 'observed-at', value: 'value', note: 'note', unit: 'measure' };
    for (const e of errors) {
      const id = FIELD_ERROR_IDS[e.field];
      if (!id) continue;
      const n = $(id);
      n.textContent = (n.textContent ? n.textContent + ' ' : '') + (CODE_MESSAGES[e.code] || e.message);
      n.hidden = false;
      if (inputs[e.field]) $(inputs[e.field]).setAttribute('aria-invalid', 'true');
    }
  }

  function showProblem(area, r) {
    area.appendChild(el('p', r.status === 0 ? 'サーバーに接続できません。' : statusText(r.status), 'error'));
    if (r.doc && typeof r.doc.detail === 'string') area.appendChild(el('p', r.doc.detail));
    const errors = (r.doc && Array.isArray(r.doc.errors)) ? r.doc.errors : [];
    if (errors.length) {
      const ul = el('ul');
      for (const e of errors) ul.appendChild(el('li', errorText(e)));
      area.appendChild(ul);
    }
    return errors;
  }

  async function submitOne(ev) {
    ev.preventDefault();
    const area = $('result');
    clear(area);
    clearFieldErrors();
    const m = currentMeasure();
    if (!m) return;
    // A ratio's numerator and denominator are counts in its component_unit, never percent.
    const unit = m.component_required ? (m.component_unit || '件') : m.unit;
    const body = { measure_id: m.id, unit };
    const date = $('observed-at').value;
    if (date) body.observed_at = date;
    const raw = $('value').value.trim();
    if (raw !== '') body.value = Number(raw);
    if (m.component_required) {
      const c = document.querySelector('input[name="component"]:checked');
      if (c) body.component = c.value;
    }
    const note = $('note').value;
    if (note.trim() !== '') body.note = note;
    $('submit').disabled = true;
    area.appendChild(el('p', '送信中…'));
    const r = await call('POST', '/v1/measurements', JSON.stringify(body), 'application/json');
    $('submit').disabled = false;
    clear(area);
    if (r.status === 202 && r.doc) {
      area.appendChild(el('p', '受け付けました（登録番号 ' + r.doc.event_id + '）。', 'ok'));
      $('value').value = '';
      $('note').value = '';
      return;
    }
    showFieldErrors(showProblem(area, r));
  }

  // ---- CSV ----

  // RFC 4180 records of TEXT, numbered as the server numbers them (the header is row 1,
  // blank lines count): [{row, cells}]. For the preview only; the server parses for real.
  function parseCsv(text) {
    const out = [];
    let row = 1, cells = [], cell = '', quoted = false, i = 0, touched = false;
    const end = () => {
      cells.push(cell);
      out.push({ row, cells });
      row++;
      cells = [];
      cell = '';
      touched = false;
    };
    while (i < text.length) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { cell += '"'; i += 2; continue; }
        if (ch === '"') { quoted = false; i++; continue; }
        cell += ch; i++; continue;
      }
      if (ch === '"') { quoted = true; touched = true; i++; continue; }
      if (ch === ',') { cells.push(cell); cell = ''; touched = true; i++; continue; }
      if (ch === '\r' || ch === '\n') {
        if (ch === '\r' && text[i + 1] === '\n') i++;
        i++;
        end();
        continue;
      }
      cell += ch; touched = true; i++;
    }
    if (touched || cell !== '' || cells.length) end();
    return out.map((r) => ({ row: r.row, cells: r.cells.map((c) => c.trim()) }))
      .filter((r) => r.cells.some((c) => c !== ''));
  }

  function decode(bytes) {
    try {
      let text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      return { text, charset: 'utf-8' };
    } catch (err) {
      return { text: new TextDecoder('shift_jis').decode(bytes), charset: 'Shift_JIS' };
    }
  }

  async function onFile() {
    const input = $('csv-file');
    const info = $('csv-info');
    clear($('csv-result'));
    csvFile = null;
    $('csv-send').disabled = true;
    $('csv-preview').hidden = true;
    if (!input.files || !input.files.length) { info.textContent = ''; return; }
    const file = input.files[0];
    const bytes = await file.arrayBuffer();
    const { text, charset } = decode(bytes);
    const rows = parseCsv(text);
    csvFile = { bytes, charset, rows };
    const data = rows.length ? rows.length - 1 : 0;
    info.textContent = file.name + '：' + (charset === 'utf-8' ? 'UTF-8' : 'Shift_JIS') + '、データ ' + data + ' 行。内容を確認して送信してください。';
    renderPreview(rows);
    $('csv-send').disabled = data === 0;
  }

  function renderPreview(rows) {
    const head = $('csv-preview-head');
    const body = $('csv-preview-body');
    clear(head);
    clear(body);
    if (!rows.length) return;
    const tr = el('tr');
    tr.appendChild(el('th', '行')).setAttribute('scope', 'col');
    for (const h of rows[0].cells) tr.appendChild(el('th', h)).setAttribute('scope', 'col');
    tr.appendChild(el('th', '結果')).setAttribute('scope', 'col');
    head.appendChild(tr);
    for (const r of rows.slice(1)) {
      const line = el('tr');
      line.id = 'csv-row-' + r.row;
      line.appendChild(el('th', r.row)).setAttribute('scope', 'row');
      for (const c of r.cells) line.appendChild(el('td', c));
      const res = el('td', '未送信', 'row-result');
      line.appendChild(res);
      body.appendChild(line);
    }
    $('csv-preview').hidden = false;
  }

  async function submitCsv(ev) {
    ev.preventDefault();
    if (!csvFile) return;
    const area = $('csv-result');
    clear(area);
    const atomic = $('csv-atomic').checked;
    $('csv-send').disabled = true;
    area.appendChild(el('p', '送信中…'));
    const path = '/v1/measurements:batch' + (atomic ? '?atomic=true' : '');
    const r = await call('POST', path, csvFile.bytes, 'text/csv; charset=' + csvFile.charset);
    $('csv-send').disabled = false;
    clear(area);
    const results = (r.doc && Array.isArray(r.doc.results)) ? r.doc.results : null;
    if (r.status === 202 || r.status === 207) {
      const d = r.doc;
      area.appendChild(el('p', '登録 ' + d.accepted + ' 行、不備 ' + d.rejected + ' 行。', d.rejected ? 'error' : 'ok'));
    } else if (r.status === 422 && atomic && results) {
      area.appendChild(el('p', '誤りのある行があるため、何も登録していません。', 'error'));
    } else {
      showProblem(area, r);
    }
    if (!results) return;
    for (const row of document.querySelectorAll('#csv-preview-body .row-result')) {
      row.textContent = atomic && r.status === 422 ? '未登録' : '—';
      row.parentNode.className = '';
    }
    const list = el('ul');
    for (const it of results) {
      const line = it.row ? $('csv-row-' + it.row) : null;
      const cell = line ? line.querySelector('.row-result') : null;
      let text;
      if (it.status === 202) text = '登録済み';
      else {
        const errs = (it.errors || []).map(errorText);
        text = (errs.length ? errs.join(' ') : statusText(it.status));
        list.appendChild(el('li', (it.row ? it.row + ' 行目：' : '') + text));
      }
      if (cell) {
        cell.textContent = text;
        line.className = it.status === 202 ? 'row-ok' : 'row-error';
      }
    }
    if (list.firstChild) area.appendChild(list);
  }

  // ---- start ----

  document.addEventListener('DOMContentLoaded', () => {
    $('auth-form').addEventListener('submit', loadMe);
    $('forget').addEventListener('click', forget);
    $('measure').addEventListener('change', onMeasureChange);
    $('entry-form').addEventListener('submit', submitOne);
    $('csv-file').addEventListener('change', onFile);
    $('csv-form').addEventListener('submit', submitCsv);
    const saved = sessionStorage.getItem(STORE_KEY);
    if (saved) {
      $('token').value = saved;
      $('remember').checked = true;
      loadMe(null);
    }
  });
})();
