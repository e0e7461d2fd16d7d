export const STATUS_PAGE_HTML = ''; export const STATUS_PAGE_SCRIPT = ''; export const STATUS_PAGE_STYLE = '';
